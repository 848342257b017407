"""Prints a new VAPID key pair for the VAPID_PRIVATE_KEY / VAPID_PUBLIC_KEY settings."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from notifications.providers.webpush import generate_pair


class Command(BaseCommand):
    help = "Print a new VAPID key pair (base64url raw keys; --pem adds the private key as PEM)."

    def add_arguments(self, parser):
        parser.add_argument("--pem", action="store_true", help="also print the PEM private key")

    def handle(self, *args, **options):
        pair = generate_pair()
        self.stdout.write(f"VAPID_PRIVATE_KEY={pair['VAPID_PRIVATE_KEY']}")
        self.stdout.write(f"VAPID_PUBLIC_KEY={pair['VAPID_PUBLIC_KEY']}")
        if options["pem"]:
            self.stdout.write(pair["private_pem"])
