"""domainroute.adapters"""
