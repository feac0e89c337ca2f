"""3D segmentation: training, prediction and evaluation on nnU-Net and MSD datasets."""
