"""brainseg_utils"""
