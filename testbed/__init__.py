"""The local test bed: real Neo4j, Redis, S3, a container engine and Prefect, on loopback."""
