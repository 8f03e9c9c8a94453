"""Runs SQL statements on the current ClickHouse engine in-process (chDB), for the tests.

Reads a JSON array of statements on stdin, runs them in order in a fresh session, and prints a
JSON array with, per statement, whether it ran, its error, the number of result rows and the
first 100 rows.
Used by crates/cityops-clickhouse/tests to check the modern-only DDL and the example queries of
docs/schema.md on ClickHouse 26.9, which cannot be installed here as a server.
"""

import json
import sys
import tempfile

from chdb import session as chs

statements = json.load(sys.stdin)
results = []
with tempfile.TemporaryDirectory() as path:
    sess = chs.Session(path)
    for sql in statements:
        try:
            out = sess.query(sql, "JSONEachRow")
            text = out.bytes().decode() if hasattr(out, "bytes") else str(out)
            rows = [line for line in text.splitlines() if line.strip()]
            data = [json.loads(line) for line in rows[:100]]
            results.append({"ok": True, "rows": len(rows), "error": "", "data": data})
        except Exception as error:  # chDB raises a plain RuntimeError with the server message
            results.append({"ok": False, "rows": 0, "error": str(error)[:500], "data": []})
    version = sess.query("SELECT version()", "CSV")
    sess.close()
print(json.dumps({"version": str(version).strip().strip('"'), "results": results}))
