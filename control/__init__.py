"""The gRPC servicers and the `helios` command-line client."""
