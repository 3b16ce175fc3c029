"""Outbound consent calls: one call, campaigns, and the originate paths (ARI, AMI)."""
