"""Application jobs built on the library layers: the demo (the main job), export with its variants, folder matting."""
