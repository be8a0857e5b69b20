"""The numbers of the data format, each in one place: video rate, audio rate, crop geometry."""

FPS = 25  # every dataset and every render is 25 frames per second
SAMPLE_RATE = 16000  # audio is 16 kHz mono everywhere after extraction
CROP_SIZE = 328  # the crop cache's resolution
BORDER = 4  # the networks see crop[BORDER:CROP_SIZE-BORDER] on both axes
INNER = CROP_SIZE - 2 * BORDER  # 320
