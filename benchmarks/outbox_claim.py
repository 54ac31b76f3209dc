"""The PostgreSQL claim query at a large backlog: the v2 index (due_at) against v3's (due_at, id).

Run: .venv/bin/python benchmarks/outbox_claim.py [--queued 5000 100000 1000000]
     [--url postgresql://postgres@127.0.0.1/test]

For each backlog size it fills a scratch schema with queued entries whose due times
fall into 1,000 buckets (what retries after an outage look like: many entries share a
due time), then times claim()'s SELECT (``ORDER BY due_at, id LIMIT 50 FOR UPDATE SKIP
LOCKED``) with each index: the server's execution time, best of 20, and the plan. With
(due_at) alone PostgreSQL sorts the ties of the due buckets it reads for each claim; with
(due_at, id) it reads the first 50 rows in order.
The schema is dropped afterwards. Nothing is asserted.
"""

from __future__ import annotations

import argparse
from typing import Any

import psycopg

QUERY = (
    "SELECT id FROM claim_bench.entries WHERE state IN ('queued', 'deferred') "
    "AND due_at <= 1e12 ORDER BY due_at, id LIMIT 50 FOR UPDATE SKIP LOCKED"
)


ROUNDS = 20


def _nodes(plan: dict[str, Any]) -> str:
    """The plan's node types, outermost first: ``LockRows > Limit > Index Scan``."""
    children = plan.get("Plans") or []
    below = f" > {_nodes(children[0])}" if children else ""
    return f"{plan['Node Type']}{below}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, nargs="+", default=[5_000, 100_000, 1_000_000])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1/test")
    args = parser.parse_args()
    print(f"{'queued':>9}  {'index':<13} {'ms':>8}  plan (server execution time, best of {ROUNDS})")
    with psycopg.connect(args.url, autocommit=True) as conn:
        for queued in args.queued:
            conn.execute("DROP SCHEMA IF EXISTS claim_bench CASCADE")
            conn.execute("CREATE SCHEMA claim_bench")
            conn.execute(
                "CREATE TABLE claim_bench.entries (id BIGINT GENERATED ALWAYS AS IDENTITY "
                "PRIMARY KEY, state TEXT NOT NULL, due_at DOUBLE PRECISION)"
            )
            conn.execute(
                "INSERT INTO claim_bench.entries (state, due_at) "
                "SELECT 'queued', (g %% 1000)::float FROM generate_series(1, %s) g",
                (queued,),
            )
            for name, columns in (("(due_at)", "due_at"), ("(due_at, id)", "due_at, id")):
                conn.execute("DROP INDEX IF EXISTS claim_bench.due")
                conn.execute(
                    f"CREATE INDEX due ON claim_bench.entries ({columns}) "
                    "WHERE state IN ('queued', 'deferred')"
                )
                conn.execute("ANALYZE claim_bench.entries")
                times, plan = [], ""
                for _ in range(ROUNDS):
                    # The server's own execution time: the client's share is the same for
                    # both indexes and only adds noise on a busy machine.
                    rows = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + QUERY).fetchone()
                    top = rows[0][0] if rows else {}
                    times.append(float(top["Execution Time"]))
                    plan = _nodes(top["Plan"])
                print(f"{queued:>9,}  {name:<13} {min(times):8.3f}  {plan}")
        conn.execute("DROP SCHEMA claim_bench CASCADE")


if __name__ == "__main__":
    main()
