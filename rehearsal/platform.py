"""What Elastic Beanstalk's Python 3.11 platform on Amazon Linux 2023 accepts and does, as data.

Sources: the AWS docs (customize-containers-ec2, environment-resources, command-options-general,
command-options-specific, python-configuration-procfile) and the AL2023 package repositories.
"""
from runtime.harness import EB_THREADS, EB_WORKERS

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
PYTHON_NAMESPACE = "aws:elasticbeanstalk:container:python"

# Without a Procfile the platform runs gunicorn on WSGIPath (default `application`) with
# NumProcesses workers and NumThreads threads; nginx forwards to port 8000.
DEFAULT_WSGI_PATH = "application"
DEFAULT_WORKERS = EB_WORKERS
DEFAULT_THREADS = EB_THREADS
PROXY_PORT = 8000
# nginx serves /static from the bundle's static/ folder unless a mapping says otherwise.
DEFAULT_STATIC = {"/static": "static"}

# The app's virtualenv, which container commands must activate to reach its tools.
VENV_ACTIVATE = "source /var/app/venv/*/bin/activate"
VENV_FOLDER = "/var/app/venv/"
# Where AL2023 keeps the SASL plugins (cyrus-sasl-plain), and the Debian folder that must not travel.
SASL_PLUGINS = "/usr/lib64/sasl2"
DEBIAN_SASL_PLUGINS = "x86_64-linux-gnu/sasl2"
# Packages the AL2023 repositories lack, and why none is needed.
NOT_IN_AL2023 = {"libmemcached-devel": "the pylibmc wheel already bundles libmemcached"}

# What pip evaluates a requirement's environment marker against on the platform (PEP 508 names).
# Only "3.11" is known of its Python and nothing of its kernel, so those stay that coarse.
MARKER_ENVIRONMENT = {
    "implementation_name": "cpython", "implementation_version": "3.11",
    "platform_python_implementation": "CPython", "python_version": "3.11",
    "python_full_version": "3.11", "os_name": "posix", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "platform_release": "",
    "platform_version": "", "extra": "",
}
