"""``verify``: whether an image directory may boot here, with every reason.

:func:`verify_image` runs the checks of :mod:`.pipeline` and returns a
:class:`Verdict` (allow or deny, reasons with stable codes from
:data:`REASONS`); :mod:`.cache` remembers positive verdicts of unchanged
images so a second verify of the same file answers without re-hashing.
"""

from imagefactory.verify.pipeline import Inspector, VerifyOptions, verify_image
from imagefactory.verify.verdict import REASONS, Reason, Verdict

__all__ = ["REASONS", "Inspector", "Reason", "Verdict", "VerifyOptions", "verify_image"]
