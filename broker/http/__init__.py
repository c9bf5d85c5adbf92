"""The way in: the GraphQL routes' endpoint, the document cache and its limits, compiled plans,
the schema and the resolvers bound to it, and who may scrape `/metrics`."""
