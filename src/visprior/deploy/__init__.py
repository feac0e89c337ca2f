"""Deployment: everything that ships a trained network. MONAI bundles
(:func:`visprior.deploy.bundle.export_bundle`) and the bundle's own transforms
(:mod:`visprior.deploy.transforms`); a fused network as TorchScript or ONNX
(:mod:`visprior.deploy.export`), and a run's network as one such file
(:mod:`visprior.deploy.runs`)."""
