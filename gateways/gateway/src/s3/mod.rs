//! The S3 service: [`S3Gateway`] implements `s3s::S3` over the tenants' namespaces.
//!
//! Each operation finds the caller's tenant from the access key SigV4 verified, then the
//! bucket (a top-level directory of the tenant's namespace), then works through the
//! native client. Operation bodies live in [`objects`], [`list`] and [`multipart`];
//! errors are mapped to S3 codes in [`errors`] only.

pub mod auth;
pub mod errors;
pub(crate) mod list;
mod meta;
pub(crate) mod multipart;
pub(crate) mod objects;
pub mod paths;
pub(crate) mod versions;

use std::sync::Arc;

use kiseki_client::{ClientError, Namespace};
use kiseki_namespace::{FileKind, InodeId, NamespaceError};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use crate::tenants::{Tenant, Tenants};
use errors::client_error;

/// Chunks of one PUT (or part) whose fragments are written at once: twice a file's
/// default. A request's chunks wait on the devices' flushes, and with 4 in flight a
/// single 64 MiB PUT kept too few bytes queued to share them (0.084 GB/s against 0.145
/// with 8 and 0.143 with 16, `kiseki bench s3`, 2026-12-07). Memory: at most
/// `requests_in_flight_max` × 8 chunks of fragments (1.5 MiB each on average with 4+2).
pub const CHUNKS_IN_FLIGHT_PER_REQUEST: usize = 8;

/// The S3 service of every tenant.
#[derive(Clone, Debug)]
pub struct S3Gateway {
    tenants: Arc<Tenants>,
}

/// A bucket of the calling tenant: its directory in the tenant's namespace.
pub(crate) struct BucketRef {
    pub namespace: Namespace,
    pub name: String,
    pub dir: InodeId,
}

impl S3Gateway {
    /// The service over `tenants`.
    pub fn new(tenants: Arc<Tenants>) -> S3Gateway {
        S3Gateway { tenants }
    }

    /// The tenant that signed `req` (anonymous requests are refused).
    pub(crate) async fn tenant<T>(&self, req: &S3Request<T>) -> S3Result<Arc<Tenant>> {
        let Some(credentials) = &req.credentials else {
            return Err(s3_error!(AccessDenied, "anonymous requests are not allowed"));
        };
        match self.tenants.lookup(&credentials.access_key).await {
            Some((tenant, _)) => Ok(tenant),
            None => Err(s3_error!(InvalidAccessKeyId)),
        }
    }

    /// The caller's bucket `name`: `NoSuchBucket` if no tenant has it, `AccessDenied` if
    /// another tenant does (I-S2).
    pub(crate) async fn bucket<T>(&self, req: &S3Request<T>, name: &str) -> S3Result<BucketRef> {
        let tenant = self.tenant(req).await?;
        paths::check_bucket_name(name)?;
        match tenant.namespace.lookup(InodeId::ROOT, name.as_bytes()).await {
            Ok((dir, attributes)) if attributes.kind == FileKind::Directory => Ok(BucketRef {
                namespace: tenant.namespace.clone(),
                name: name.to_owned(),
                dir,
            }),
            Ok(_) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {
                Err(self.missing_bucket(&tenant, name).await)
            }
            Err(error) => Err(client_error(error)),
        }
    }

    /// Why `tenant` cannot use the bucket `name` it does not hold.
    async fn missing_bucket(&self, tenant: &Tenant, name: &str) -> s3s::S3Error {
        let table = self.tenants.table();
        for other in table.tenants.iter().filter(|other| other.name != tenant.name) {
            if let Ok((_, attributes)) = other.namespace.lookup(InodeId::ROOT, name.as_bytes()).await {
                if attributes.kind == FileKind::Directory {
                    return s3_error!(AccessDenied, "the bucket belongs to another account");
                }
            }
        }
        s3_error!(NoSuchBucket)
    }

    /// The tenant holding the bucket `name`; an error when a tenant's namespace cannot
    /// answer (a name must never be given out twice).
    async fn owner_of(&self, name: &str) -> S3Result<Option<Arc<Tenant>>> {
        let table = self.tenants.table();
        for tenant in table.tenants.iter() {
            match tenant.namespace.lookup(InodeId::ROOT, name.as_bytes()).await {
                Ok((_, attributes)) if attributes.kind == FileKind::Directory => return Ok(Some(Arc::clone(tenant))),
                Ok(_) | Err(ClientError::Namespace(NamespaceError::NotFound)) => {}
                Err(error) => return Err(client_error(error)),
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl S3 for S3Gateway {
    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let tenant = self.tenant(&req).await?;
        let mut buckets = Vec::new();
        let entries = list::all_names(&tenant.namespace, InodeId::ROOT).await?;
        for listed in entries {
            let attributes = listed.attributes;
            let Ok(name) = String::from_utf8(listed.entry.name) else {
                continue;
            };
            if attributes.kind != FileKind::Directory || paths::check_bucket_name(&name).is_err() {
                continue;
            }
            buckets.push(Bucket {
                name: Some(name),
                creation_date: Some(meta::timestamp(attributes.ctime)),
                bucket_region: None,
            });
        }
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some(tenant.name.clone()),
                id: Some(tenant.name.clone()),
            }),
            ..Default::default()
        }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let tenant = self.tenant(&req).await?;
        let name = &req.input.bucket;
        paths::check_bucket_name(name)?;
        if let Some(owner) = self.owner_of(name).await? {
            return Err(match owner.name == tenant.name {
                true => s3_error!(BucketAlreadyOwnedByYou),
                false => s3_error!(BucketAlreadyExists),
            });
        }
        match tenant.namespace.mkdir(&format!("/{name}"), 0o755).await {
            Ok(_) => {}
            Err(ClientError::Namespace(NamespaceError::AlreadyExists)) => {
                return Err(s3_error!(BucketAlreadyOwnedByYou))
            }
            Err(error) => return Err(client_error(error)),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        }))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = self.bucket(&req, &req.input.bucket).await?;
        let uploads = multipart::uploads_in(&bucket).await?;
        if !uploads.is_empty() {
            return Err(s3_error!(
                BucketNotEmpty,
                "the bucket has multipart uploads in progress"
            ));
        }
        if versions::clear_tree(&bucket).await? {
            return Err(s3_error!(
                BucketNotEmpty,
                "the bucket holds object versions or delete markers"
            ));
        }
        match bucket.namespace.rmdir_at(InodeId::ROOT, bucket.name.as_bytes()).await {
            Ok(()) => Ok(S3Response::new(DeleteBucketOutput {})),
            Err(ClientError::Namespace(NamespaceError::NotEmpty)) => Err(s3_error!(BucketNotEmpty)),
            Err(error) => Err(client_error(error)),
        }
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket(&req, &req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket(&req, &req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        versions::get_bucket_versioning(self, req).await
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        versions::put_bucket_versioning(self, req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put_object(self, req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        objects::get_object(self, req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        objects::head_object(self, req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete_object(self, req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_objects(self, req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        objects::copy_object(self, req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}
