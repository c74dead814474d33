"""llm-jp-4 model-card evaluation harness: generate, judge, aggregate, report."""

__version__ = "0.1.0"
