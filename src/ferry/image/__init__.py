"""Images: the content-addressed blob store, manifests, layer unpacking,
the registry client and the Debian image builder.

It knows nothing of containers beyond handing out layer paths.
"""
