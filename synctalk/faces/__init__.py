"""Face stage: face detectors (SCRFD, or dlib's HOG detector that needs no model file), landmark
networks (PFLD 110 points, dlib 68), crop boxes; `factory` says which detector a run uses and builds it.

Submodules are imported on use (`synctalk.faces.detector`, `.dlib_detector`, `.factory`, `.landmarks`,
`.topology`, `.crop`, `.pipeline`) so that importing this package loads neither onnxruntime, torch nor dlib.
"""
