"""domainroute.tools"""
