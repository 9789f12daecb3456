"""domainroute: domain-routed LangGraph agents with per-domain LoRA adapters, cited retrieval and learned escalation."""

__version__ = "0.1.0"
