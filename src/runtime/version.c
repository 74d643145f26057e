/*
 * version.c -- the library's version at run time, which may differ from
 * the SPARCL_VERSION_* macros an application was compiled with.
 */
#include "sparcl.h"

SPARCL_API const char *sparcl_version(void)
{
    return SPARCL_VERSION_STRING;
}

SPARCL_API int sparcl_version_number(void)
{
    return SPARCL_VERSION_NUMBER;
}
