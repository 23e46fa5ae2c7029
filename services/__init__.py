"""The logic of images-in-bulk; nothing here imports bottle."""
