"""labels.json: the image's endorsement metadata, its schema and its exports."""
