"""The run planner: predicts seconds and disk per stage and per notebook before a run, compares them with the
platform's limits and says what to change when the run does not fit (``python -m brainseg_utils.plan``).

  * ``devices``   published facts of the GPUs users get (peak compute, memory bandwidth, memory) and the
                  platforms' limits (session length, kept output, disk);
  * ``calibrate`` unit costs measured on the present device in a few seconds (a U-Net step, an encoder batch,
                  a decoder step, reading a case), cached per device and code version; a device that is not
                  present is scaled from a measured reference by its published peaks and labelled an estimate;
  * ``workload``  how many cases, slices, epochs and encoder passes a profile means for the data found;
  * ``estimate``  stages x unit costs -> the plan (``Plan.to_json()``), the verdict and the suggestions.
"""
