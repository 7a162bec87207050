// A small deterministic pretraining corpus for the training tests
// (test_pipeline, test_mpi): dir/train.txt (400 documents) and dir/val.txt
// (40), sentences of 15 words, one document per paragraph.
#ifndef NC_TESTS_CORPUS_UTIL_H
#define NC_TESTS_CORPUS_UTIL_H

// Writes the two files (fails the test on error).
void nc_test_write_corpus(const char *dir);

#endif
