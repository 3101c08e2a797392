#!/usr/bin/env python
"""Django's command-line utility for the recipe site: ``python manage.py check``, ``runserver``."""

from __future__ import annotations

import os
import sys

from django.core.management import execute_from_command_line


def main() -> None:
    """Run a Django command with the recipe's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
