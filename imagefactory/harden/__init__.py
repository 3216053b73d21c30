"""Hardening profiles (data) and their offline application to a built image."""
