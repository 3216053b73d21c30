"""The session fixtures that build real images, for the integration tests only.

Unit tests never load them: they live in tests/integration_images.py and are
registered here, below tests/integration/.
"""

from tests.integration_images import (  # noqa: F401
    build_recipe,
    build_settings,
    built_image,
    example_build,
    frozen_archive,
)
