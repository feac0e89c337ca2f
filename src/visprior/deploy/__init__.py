"""Deployment: MONAI bundles (:func:`visprior.deploy.bundle.export_bundle`), the bundle's own
transforms (:mod:`visprior.deploy.transforms`) and the ``visprior export`` commands."""
