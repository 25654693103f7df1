from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed static files; ES module imports are rewritten to the hashed names
    too, so a deploy never mixes a new page script with a cached old protocol module."""

    support_js_module_import_aggregation = True
