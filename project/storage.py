from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed static files; ES module imports are rewritten to the hashed names
    too, so a deploy never mixes a new page script with a cached old protocol module."""

    support_js_module_import_aggregation = True

    def stored_name(self, name: str) -> str:
        """A file missing from the manifest (no collectstatic yet, or one older than the file)
        keeps its plain name, which whitenoise serves from the static directories
        (WHITENOISE_USE_FINDERS), instead of failing every page that links it."""
        try:
            return super().stored_name(name)
        except ValueError:  # not in the manifest, nor collected into STATIC_ROOT
            if self.manifest_strict:  # WHITENOISE_MANIFEST_STRICT asks for the error
                raise
            return name
