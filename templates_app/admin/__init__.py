"""Staff edit templates here: a template's variables as rows and what is live per language; its
versions with a preview beside the source, a diff between two of them, and the review buttons
(submit, approve, reject, make live again, archive). Every change goes through ``services``; the
four-eyes rule applies to staff too.
"""

from templates_app.admin import templates, versions

__all__ = ["templates", "versions"]
