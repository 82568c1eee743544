"""The operator pages (docs/web.md): read-only, server-rendered, signed in
with the API token in production. ``chm.app`` mounts them (``router.install_web``)."""
