#!/usr/bin/env python3
"""Prints the ConfigMaps cityops-config and cityops-rules from the repository's files.

The config (deploy/config/cityops.toml) and the rule files (deploy/rules/*.yaml) stay the one
copy: `python3 deploy/kubernetes/configmaps.py | kubectl apply -f -` after each change. The
pods mount them at /etc/cityops/config and /etc/cityops/rules, where the config names the rules
as `../rules/<file>`. Standard-library Python only; the output is checked against Kubernetes'
schemas in make test (crates/cityops/tests/cli/deployment.rs).
"""

import json
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent


def config_map(name: str, files: list[Path]) -> str:
    # JSON is YAML: every string is quoted and escaped, whatever the files hold.
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": "cityops",
            "labels": {"app.kubernetes.io/part-of": "cityops"},
        },
        "data": {f.name: f.read_text(encoding="utf-8") for f in files},
    }
    return json.dumps(document, ensure_ascii=False, indent=2)


def main() -> int:
    config = [DEPLOY / "config" / "cityops.toml"]
    rules = sorted((DEPLOY / "rules").glob("*.yaml"))
    if not rules:
        print("configmaps.py: no rule files in deploy/rules", file=sys.stderr)
        return 1
    print(config_map("cityops-config", config))
    print("---")
    print(config_map("cityops-rules", rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
