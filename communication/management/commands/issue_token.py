"""``manage.py issue_token``: development tokens the API accepts (Contract).

    issue_token --user EXTERNAL_ID [--email E] [--phone P] [--name N] [--locale L] [--timezone TZ]
                [--roles r1,r2] [--organization ORG_ID] [--staff] [--ttl SECONDS]
    issue_token --service NAME --scopes a,b [--ttl SECONDS]

The token is printed alone on the last line of standard output.
"""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from communication import organizations, services
from communication.audit import audit_actor
from communication.auth import keys, tokens
from communication.models import Organization


class Command(BaseCommand):
    help = "Print a development JWT for a user (created or updated locally) or for a service."

    def add_arguments(self, parser):
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--user", metavar="EXTERNAL_ID", help="the user's identity id (sub)")
        who.add_argument("--service", metavar="NAME", help="a calling service's client id")
        parser.add_argument("--email")
        parser.add_argument("--phone", help="E.164, like +33612345678")
        parser.add_argument("--name")
        parser.add_argument("--locale")
        parser.add_argument("--timezone")
        parser.add_argument("--roles", help="comma-separated, like support_agent,admin")
        parser.add_argument(
            "--organization",
            metavar="ORG_ID",
            help="the organization claim (the identity service's id, like acme-emea)",
        )
        parser.add_argument(
            "--staff",
            action="store_true",
            default=None,
            help="mark the user as staff (admin access)",
        )
        parser.add_argument("--scopes", default="", help="comma-separated, for --service")
        parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")

    def handle(self, *args, **opts):
        if not keys.dev_mode():
            raise CommandError(
                "issue_token only works in development: with IDENTITY_JWKS_URL set (or "
                "APP_ENV=production) tokens come from the identity service."
            )
        if opts["ttl"] <= 0:
            raise CommandError("--ttl must be a positive number of seconds")
        if opts["service"]:
            scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
            token = tokens.issue_service_token(opts["service"], scopes, ttl=opts["ttl"])
            self.stdout.write(f"service {opts['service']} scopes={' '.join(scopes) or '-'}")
            self.stdout.write(token)
            return
        if opts["organization"] and not organizations.valid_id(opts["organization"]):
            raise CommandError(
                "--organization: an id of 1 to 128 characters, without '/', spaces or control "
                "characters"
            )
        roles = None
        if opts["roles"] is not None:
            roles = [r.strip() for r in opts["roles"].split(",") if r.strip()]
        try:
            # A staff flag granted here is recorded in the audit trail as this command's act.
            with audit_actor("command:issue_token"):
                user = services.user_update_local(
                    external_id=opts["user"],
                    email=opts["email"],
                    phone=opts["phone"],
                    name=opts["name"],
                    locale=opts["locale"],
                    timezone=opts["timezone"],
                    roles=roles,
                    organization=opts["organization"],
                    staff=opts["staff"],
                )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        token = tokens.issue_user_token(user, ttl=opts["ttl"])
        if user.organization and not Organization.objects.filter(id=user.organization).exists():
            self.stderr.write(
                f"note: organization {user.organization!r} is not known locally: staff add it "
                "in the console (or it is looked up through the identity service when the "
                "token is first used, where one is configured)."
            )
        self.stdout.write(f"user {user.external_id} ({user.email or 'no email'})")
        self.stdout.write(token)
