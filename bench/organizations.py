"""The organization tree's reads at volume, each beside a reference measured in the same run.

    .venv/bin/python bench/organizations.py [--tops 20] [--fanout 10] [--levels 4] [--rounds 200]

Creates a scratch database (``bench_orgs``: created, migrated and dropped here, on the server of
DATABASE_URL or the embedded one) and seeds ``--tops`` top-level organizations, each with
``--fanout`` children per organization down ``--levels`` levels (set-based INSERT … SELECT; the
trigger writes every path), then VACUUM ANALYZE.

Times, as medians over ``--rounds`` calls: ``organizations_within`` of a top-level organization
and of one a level down (one range scan of the path index) beside a recursive CTE over
``parent_id`` returning the same ids (the other way the issue allows); ``organization_policy`` of a
leaf (one query over the path's ids) beside the same walk up ``parent_id`` by a recursive CTE.
Asserts nothing beyond both ways answering the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from communication import organizations  # noqa: E402

SCRATCH = "bench_orgs"

LEVEL = """
    INSERT INTO communication_organization (id, name, parent_id, path, updated_at)
    SELECT p.id || '-' || g, '', p.id, '', now()
    FROM communication_organization p, generate_series(1, %s) AS g
    WHERE array_length(string_to_array(p.path, '/'), 1) = %s
"""
DESCENDANTS_CTE = """
    WITH RECURSIVE t(id) AS (
        SELECT id FROM communication_organization WHERE id = %s
        UNION ALL
        SELECT o.id FROM communication_organization o JOIN t ON o.parent_id = t.id
    ) SELECT id FROM t
"""
ANCESTORS_CTE = """
    WITH RECURSIVE t(id, parent_id, direct_scope, group_create_roles, broadcast_roles, d) AS (
        SELECT id, parent_id, direct_scope, group_create_roles, broadcast_roles, 0
        FROM communication_organization WHERE id = %s
        UNION ALL
        SELECT o.id, o.parent_id, o.direct_scope, o.group_create_roles, o.broadcast_roles, t.d + 1
        FROM communication_organization o JOIN t ON o.id = t.parent_id
    ) SELECT * FROM t ORDER BY d DESC
"""


def seed(tops: int, fanout: int, levels: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO communication_organization (id, name, path, updated_at)"
            " SELECT 't' || g, '', '', now() FROM generate_series(1, %s) AS g",
            [tops],
        )
        for depth in range(1, levels):
            cursor.execute(LEVEL, [fanout, depth])
        cursor.execute(
            "UPDATE communication_organization SET direct_scope = 'organization'"
            " WHERE parent_id IS NULL"
        )
        cursor.execute("VACUUM ANALYZE communication_organization")
        cursor.execute("SELECT count(*) FROM communication_organization")
        return cursor.fetchone()[0]


def median_ms(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def raw(sql: str, params) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def cte(sql: str, org_id: str) -> list:
    return raw(sql, [org_id])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tops", type=int, default=20)
    parser.add_argument("--fanout", type=int, default=10)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--explain", action="store_true", help="print the plans too")
    args = parser.parse_args()

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = SCRATCH
    print(f"machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    config = setup_databases(verbosity=0, interactive=False)
    try:
        total = seed(args.tops, args.fanout, args.levels)
        print(f"{total:,} organizations, {args.tops} trees, fan-out {args.fanout}")
        leaf = "t1" + "-1" * (args.levels - 1)
        for root in ("t1", "t1-1"):
            path_ids = set(organizations.organizations_within(root).values_list("id", flat=True))
            cte_ids = {row[0] for row in cte(DESCENDANTS_CTE, root)}
            assert path_ids == cte_ids
            ours = median_ms(
                lambda r=root: list(
                    organizations.organizations_within(r).values_list("id", flat=True)
                ),
                args.rounds,
            )
            sql, params = (
                organizations.organizations_within(root).values_list("id").query.sql_with_params()
            )
            sql_only = median_ms(lambda q=sql, p=params: raw(q, p), args.rounds)
            ref = median_ms(lambda r=root: cte(DESCENDANTS_CTE, r), args.rounds)
            print(
                f"within {root} ({len(path_ids):,} organizations): path index {ours:.3f} ms"
                f" through the ORM, {sql_only:.3f} ms its SQL alone;"
                f" recursive CTE {ref:.3f} ms (reference, SQL alone)"
            )
            if args.explain:
                with connection.cursor() as cursor:
                    cursor.execute("EXPLAIN ANALYZE " + sql, params)
                    print("\n".join(r[0] for r in cursor.fetchall()))
        assert organizations.organization_policy(leaf).direct_scope == "organization"
        assert len(cte(ANCESTORS_CTE, leaf)) == args.levels
        ours = median_ms(lambda: organizations.organization_policy(leaf), args.rounds)
        ref = median_ms(lambda: cte(ANCESTORS_CTE, leaf), args.rounds)
        if args.explain:
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN ANALYZE " + organizations.LINEAGE_SQL, [leaf])
                print("\n".join(r[0] for r in cursor.fetchall()))
        print(
            f"policy of {leaf} ({args.levels} levels): {ours:.3f} ms through the ORM, resolved;"
            f" recursive CTE up parent_id {ref:.3f} ms (reference, SQL alone, rows only)"
        )
    finally:
        connections.close_all()
        teardown_databases(config, verbosity=0)


if __name__ == "__main__":
    main()
