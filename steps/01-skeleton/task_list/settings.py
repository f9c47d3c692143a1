"""Configuration from the environment."""
import os


def from_environment(instance_path):
    return {
        "SECRET_KEY": os.environ.get("SECRET_KEY"),
    }
