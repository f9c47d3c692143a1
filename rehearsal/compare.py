"""The steps' Elastic Beanstalk configuration against the root's: settings both carry must agree."""
import json
from pathlib import Path

from rehearsal.platform import STATIC_NAMESPACE
from rehearsal.readers import Config, option_settings


def flatten(configs, app_dir=None):
    """{(section, key, field): value} for the settings that can overlap between two apps."""
    flat = {}
    for config in configs:
        rows, _ = option_settings(config)
        for namespace, option, value in rows:
            value = str(value)
            if namespace == STATIC_NAMESPACE and app_dir and value.startswith(app_dir + "/"):
                value = value[len(app_dir) + 1:]  # the root serves final/ from a subfolder
            flat[("option_settings", namespace, option)] = value
        for manager, names in (config.data.get("packages") or {}).items():
            for name, version in (names or {}).items():
                flat[("packages", manager, name)] = json.dumps(version or [])
        for name, spec in (config.data.get("container_commands") or {}).items():
            spec = spec if isinstance(spec, dict) else {"command": spec}
            command = spec.get("command")
            if isinstance(command, str):
                # The root serves final/ from a subfolder; a step app is its own root.
                parts = [" ".join(p.split()) for p in command.split("&&")]
                command = " && ".join(p for p in parts if not app_dir or p != f"cd {app_dir}")
            flat[("container_commands", name, "command")] = str(command)
            for key in ("leader_only", "ignoreErrors", "test", "cwd"):
                if key in spec:
                    flat[("container_commands", name, key)] = str(spec[key])
        for path, spec in (config.data.get("files") or {}).items():
            flat[("files", path, "")] = json.dumps(spec, sort_keys=True, default=str)
    return flat


def config_disagreements(root_configs, other_configs, app_dir="final"):
    """Settings both config sets carry with different values, as readable lines."""
    root = flatten(root_configs, app_dir)
    other = flatten(other_configs)
    lines = []
    for key in sorted(set(root) & set(other)):
        if root[key] != other[key]:
            lines.append(f"{': '.join(k for k in key if k)}: root has {root[key]!r}, step has {other[key]!r}")
    return lines


def read_config_dir(folder):
    """The .config files of FOLDER/.ebextensions, parsed (raises on bad YAML)."""
    import yaml

    configs = []
    for path in sorted((Path(folder) / ".ebextensions").glob("*.config")):
        configs.append(Config(f"{Path(folder).name}/.ebextensions/{path.name}",
                              yaml.safe_load(path.read_text()) or {}))
    return configs


# ---------------------------------------------------------------------------------------------
