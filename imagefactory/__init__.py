"""imagefactory: declarative recipes to signed, gated grid worker-node disk images."""

__version__ = "0.1.0"
