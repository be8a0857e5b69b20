"""The numbers of the data format, each in one place: video rate, audio rate, crop geometry, and the
silence rule that file renders and live streams share."""

FPS = 25  # every dataset and every render is 25 frames per second
SAMPLE_RATE = 16000  # audio is 16 kHz mono everywhere after extraction
CROP_SIZE = 328  # the crop cache's resolution
BORDER = 4  # the networks see crop[BORDER:CROP_SIZE-BORDER] on both axes
INNER = CROP_SIZE - 2 * BORDER  # 320
# where the mouth lies in the networks' inner crop (x0, y0, x1, y1, end exclusive): the crop runs from
# the nose to below the chin, so the lips sit in rows ~70-190 (dlib landmarks of the fixture videos);
# the mouth metrics of `synctalk eval` are taken here, not over the chin and neck below it
MOUTH_BOX = (64, 64, 256, 224)
# silence: the lips move a little before the sound starts (and close a little after), and the mouth
# cross-fades between generated and resting (or real) over this many frames; renders and streams alike
SPEECH_LEAD_FRAMES = 2
CROSSFADE_FRAMES = 4
