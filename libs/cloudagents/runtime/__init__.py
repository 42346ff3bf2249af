"""Use cases behind the services: each handler's logic, with its dependencies passed in."""
