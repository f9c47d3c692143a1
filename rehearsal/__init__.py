"""The Elastic Beanstalk rehearsal: the source bundle, the config rules, the platform replay, the report."""
