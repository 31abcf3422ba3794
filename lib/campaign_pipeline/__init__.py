"""campaign-pipeline: fair presale selection, access codes and message waves on Spark + Delta."""

__version__ = "0.1.0"
