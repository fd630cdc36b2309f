"""The RSNA Pneumonia Detection Challenge download's layout, which the synthetic sample copies."""

LABELS_CSV = "stage_2_train_labels.csv"
CLASSES_CSV = "stage_2_detailed_class_info.csv"
TRAIN_DIR = "stage_2_train_images"
TEST_DIR = "stage_2_test_images"
