"""The FastAGI front: the consent dialogue for PBXs that give AGI (and AMI) but no ARI."""
