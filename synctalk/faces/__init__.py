"""Face stage: SCRFD detector, landmark networks (PFLD 110 points, dlib 68), crop boxes.

Submodules are imported on use (`synctalk.faces.detector`, `.landmarks`, `.topology`, `.crop`,
`.pipeline`) so that importing this package loads neither onnxruntime, torch nor dlib.
"""
