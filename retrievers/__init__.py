"""domainroute.retrievers"""
