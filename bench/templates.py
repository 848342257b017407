"""Renders per second of a realistic email template, warm and cold.

The template is the seeded French receipt email: a full HTML layout with a <style> block, a
loop over twelve order lines, currency and date filters. Figures:

- jinja: the HTML body alone through the sandbox (guards, locale filters, escaping);
- email: what a send needs, subject + HTML + CSS inlining + generated text alternative;
- service: ``services.template_render`` by key (Redis lookup, variable validation, the above),
  with ``--service``: on a scratch database (``bench_templates``, created, migrated and
  dropped here, so the development database is never touched).

"warm" reuses the compiled template (the per-version cache); "cold" compiles it every time.

    .venv/bin/python bench/templates.py [--seconds 2] [--service]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "communication.settings")

import django

django.setup()

from templates_app import engine, seed  # noqa: E402
from templates_app.variables import validate  # noqa: E402

ITEMS = [
    {"name": f"Article n°{i}", "quantity": 1 + i % 3, "price": Decimal("4.50") + i}
    for i in range(12)
]
DATA = {
    "name": "Zoé",
    "order_number": "1042",
    "items": ITEMS,
    "total": sum(item["price"] * item["quantity"] for item in ITEMS),
    "currency": "EUR",
    "paid_at": "2026-03-01T10:15:00Z",
    "action_url": "https://example.com/orders/1042",
}


def measure(fn, seconds: float) -> tuple[float, float]:
    """(renders per second, mean ms) over at least ``seconds``."""
    fn()  # first call outside the clock (imports, Babel data)
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - start
    return count / elapsed, elapsed / count * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--service", action="store_true", help="also render through services")
    args = parser.parse_args()

    sources = seed.version_fields("email", seed.RECEIPT["texts"]["fr"], "fr")
    context, _ = validate(seed.RECEIPT["variables"], DATA)
    limits = engine.Limits.from_settings()

    def jinja(cache_key):
        def run():
            token = engine._state.set(
                engine.RenderState(
                    limits, engine.locale_for("fr"), engine.tzinfo_for("Europe/Paris")
                )
            )
            try:
                template = engine.compiled_cache.get_or_compile(
                    cache_key, sources["html"], html=True
                )
                engine.render_string(template, context, field_name="html")
            finally:
                engine._state.reset(token)

        return run

    def email(cache_key):
        def run():
            engine.render_fields(
                channel="email",
                sources=sources,
                context=context,
                locale="fr",
                timezone="Europe/Paris",
                cache_key=cache_key,
            )

        return run

    def cold(fn):
        def run():
            engine.compiled_cache.clear()
            fn()

        return run

    html = email("bench")
    out = engine.render_fields(
        channel="email", sources=sources, context=context, locale="fr", cache_key="bench"
    )
    print(
        f"receipt email (fr): {len(sources['html'])} chars of source, "
        f"{len(out.fields['html'])} chars of HTML out, {len(ITEMS)} lines"
    )
    print(f"{'':28}{'renders/s':>12}{'ms/render':>12}")
    rows = [
        ("jinja  warm", jinja("bench-jinja")),
        ("jinja  cold (compile)", cold(jinja("bench-jinja"))),
        ("email  warm", html),
        ("email  cold (compile)", cold(email("bench"))),
    ]
    for label, fn in rows:
        per_second, ms = measure(fn, args.seconds)
        print(f"{label:28}{per_second:12,.0f}{ms:12.3f}")
    if args.service:
        with _scratch_database():
            per_second, ms = measure(_service_render(), args.seconds)
        print(f"{'service warm (Redis+DB)':28}{per_second:12,.0f}{ms:12.3f}")


@contextlib.contextmanager
def _scratch_database():
    from django.conf import settings
    from django.core.cache import cache
    from django.test.utils import setup_databases, teardown_databases

    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = "bench_templates"
    # Nothing has used the cache yet: give the bench its own key space in Redis.
    settings.CACHES["default"]["KEY_PREFIX"] = "bench-templates"
    config = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        from templates_app import selectors

        cache.delete_many(
            [
                selectors.bundle_cache_key("receipt-email"),
                selectors.generation_cache_key("receipt-email"),
            ]
        )
        teardown_databases(config, verbosity=0)


def _service_render():
    from templates_app import services

    data = {
        **DATA,
        "total": str(DATA["total"]),
        "items": [{**i, "price": float(i["price"])} for i in ITEMS],
    }

    def run():
        services.template_render(
            key="receipt-email", data=data, locale="fr", timezone="Europe/Paris"
        )

    return run


if __name__ == "__main__":
    main()
