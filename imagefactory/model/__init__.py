"""The contracts stages share, each defined once: the image directory and its
file names (:mod:`.imagedir`), labels.json as a validated model (:mod:`.labels`)
and its JSON Schema (:mod:`.labelschema`), and the :class:`~.reason.Reason`
every check reports with. Below every stage; imports only the foundation."""
