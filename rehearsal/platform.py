"""What Elastic Beanstalk's Python 3.11 platform on Amazon Linux 2023 accepts and does, as data.

Sources: the AWS docs (customize-containers-ec2, environment-resources, command-options-general,
command-options-specific, python-configuration-procfile) and the AL2023 package repositories.
"""
PLATFORM = "Python 3.11 running on 64bit Amazon Linux 2023"
# EB's virtualenv lives at /var/app/venv/staging-<random>; this is the name seen on AL2 instances.
VENV_NAME = "staging-LQM1lest"
MAX_BUNDLE_BYTES = 500 * 1024 * 1024  # EB rejects larger source bundles

# Top-level keys of a configuration file (docs: customize-containers-ec2, environment-resources).
TOP_LEVEL_KEYS = ("option_settings", "packages", "groups", "users", "sources", "files", "commands",
                  "services", "container_commands", "Resources", "Outputs")
PACKAGE_MANAGERS = ("yum", "rpm", "rubygems", "python")
CONTAINER_COMMAND_KEYS = ("command", "env", "cwd", "leader_only", "test", "ignoreErrors")
PROCESS_OPTIONS = {"DeregistrationDelay", "HealthCheckInterval", "HealthCheckPath",
                   "HealthCheckTimeout", "HealthyThresholdCount", "MatcherHTTPCode", "Port",
                   "Protocol", "StickinessEnabled", "StickinessLBCookieDuration", "StickinessType",
                   "UnhealthyThresholdCount"}
# Option namespaces a Python environment on AL2023 accepts (docs: command-options-general and
# command-options-specific). A set names the options checked; None accepts any option name.
NAMESPACES = {
    "aws:autoscaling:asg": {"Availability Zones", "Cooldown", "Custom Availability Zones",
                            "EnableCapacityRebalancing", "MinSize", "MaxSize"},
    "aws:autoscaling:launchconfiguration": None,
    "aws:autoscaling:scheduledaction": None,
    "aws:autoscaling:trigger": None,
    "aws:autoscaling:updatepolicy:rollingupdate": None,
    "aws:ec2:instances": None,
    "aws:ec2:vpc": None,
    "aws:elasticbeanstalk:application": {"Application Healthcheck URL"},
    "aws:elasticbeanstalk:application:environment": None,
    "aws:elasticbeanstalk:application:environmentsecrets": None,
    "aws:elasticbeanstalk:cloudwatch:logs": None,
    "aws:elasticbeanstalk:cloudwatch:logs:health": None,
    "aws:elasticbeanstalk:command": None,
    "aws:elasticbeanstalk:container:python": {"WSGIPath", "NumProcesses", "NumThreads"},
    "aws:elasticbeanstalk:customoption": None,
    "aws:elasticbeanstalk:environment": None,
    "aws:elasticbeanstalk:environment:process:default": PROCESS_OPTIONS,
    "aws:elasticbeanstalk:environment:proxy": {"ProxyServer"},
    "aws:elasticbeanstalk:environment:proxy:staticfiles": None,
    "aws:elasticbeanstalk:healthreporting:system": None,
    "aws:elasticbeanstalk:hostmanager": None,
    "aws:elasticbeanstalk:managedactions": None,
    "aws:elasticbeanstalk:managedactions:platformupdate": None,
    "aws:elasticbeanstalk:monitoring": None,
    "aws:elasticbeanstalk:sns:topics": None,
    "aws:elasticbeanstalk:sqsd": None,
    "aws:elasticbeanstalk:trafficsplitting": None,
    "aws:elasticbeanstalk:xray": None,
    "aws:elb:healthcheck": None,
    "aws:elb:listener": None,
    "aws:elb:loadbalancer": None,
    "aws:elb:policies": None,
    "aws:elbv2:listener:default": None,
    "aws:elbv2:loadbalancer": None,
    "aws:rds:dbinstance": None,
}
# Namespaces that end in a name of your choosing: a process, a port, a policy or a rule.
NAMESPACE_PREFIXES = {
    "aws:elasticbeanstalk:environment:process:": PROCESS_OPTIONS,
    "aws:elb:listener:": None,
    "aws:elb:policies:": None,
    "aws:elbv2:listener:": None,
    "aws:elbv2:listenerrule:": None,
}
OBSOLETE_NAMESPACES = {
    "aws:elasticbeanstalk:container:python:staticfiles":
        "is for Amazon Linux AMI (AL1) platforms only; use aws:elasticbeanstalk:environment:proxy:staticfiles",
}
# Debian build packages that learners copy into `yum:` lists, and what AL2023 calls them.
DEBIAN_NAMES = {"libmariadb-dev": "mariadb-connector-c-devel",
                "default-libmysqlclient-dev": "mariadb-connector-c-devel",
                "libsasl2-modules": "cyrus-sasl-plain", "python3-dev": "python3.11-devel",
                "python3.11-dev": "python3.11-devel", "build-essential": "gcc",
                "pkg-config": "pkgconf-pkg-config"}

STATIC_NAMESPACE = "aws:elasticbeanstalk:environment:proxy:staticfiles"
ENVIRONMENT_NAMESPACE = "aws:elasticbeanstalk:application:environment"
