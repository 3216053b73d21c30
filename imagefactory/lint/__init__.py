"""Lint: a VO's recipe reviewed against a site policy and the published catalog,
for merge requests. Not built yet (see the people's-interfaces issue)."""
