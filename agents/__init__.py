"""domainroute.agents"""
