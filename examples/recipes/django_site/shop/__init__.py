"""A one-view Django site: the Django recipe (docs/recipes/django.md)."""
