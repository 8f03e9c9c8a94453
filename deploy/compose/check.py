#!/usr/bin/env python3
"""Checks a compose file against the Compose Specification's JSON schema (the one docker-compose
1.29.2 ships; `make deps` fetches it) without a container engine: structure, keys and types.

    PYTHONPATH=<a folder with jsonschema and PyYAML> deploy/compose/check.py SCHEMA COMPOSE_FILE [--json OUT]

Prints one line per problem (its path in the file), then a summary; exits 1 on any problem.
`--json OUT` also writes the file as JSON (anchors and merge keys resolved), for the checks of
make test that compare it with the repository.
"""
import json
import sys

import jsonschema
import yaml


def main() -> int:
    schema_path, compose_path = sys.argv[1], sys.argv[2]
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    with open(compose_path, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    # The schema declares draft 2019-09 by an address jsonschema does not know by that spelling.
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        print(f"{compose_path}: {where}: {error.message}")
    services = document.get("services", {}) if isinstance(document, dict) else {}
    print(f"compose: {len(services)} services, {len(errors)} problems against the Compose Specification")
    if len(sys.argv) > 4 and sys.argv[3] == "--json":
        with open(sys.argv[4], "w", encoding="utf-8") as f:
            json.dump(document, f, ensure_ascii=False, indent=1)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
