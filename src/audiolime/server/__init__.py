"""gRPC server plumbing shared by the three services (no domain logic here)."""
