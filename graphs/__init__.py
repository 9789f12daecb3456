"""domainroute.graphs: the routed agent graph (``build_graph``), its state, context and prompts."""
