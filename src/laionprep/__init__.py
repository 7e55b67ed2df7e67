"""laionprep: LAION / DataComp metadata -> img2dataset TFRecords -> Beam filtering -> TFDS -> a JAX FLIP trainer."""
from laionprep._env import setup_environment as _setup_environment

_setup_environment()

__version__ = "0.1.0"
